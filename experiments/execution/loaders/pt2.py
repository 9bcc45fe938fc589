"""`export`: `torch.export.load` of a `.pt2` archive, after `check_pt2` has read it with torch's own zip
reader and accepted only the members of a weights-only exported program (no duplicate member names,
weights and constants as raw tensor bytes, sample inputs loadable weights-only; nothing pickled, no
custom or opaque objects, no AOTInductor or other native code); differentiable.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from ...design.external import ExternalError
from .common import Loaded, model_file, one_line

FORMAT = "export"

# The members of a weights-only archive as `torch.export.save` writes it (names inside the archive's
# root folder): anything else (pickled or legacy weights, custom or opaque objects, AOTInductor,
# ExecuTorch or other native code, extra files) is refused.
PT2_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                         r"|models/model\.json|data/sample_inputs/model\.pt"
                         r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
                         r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+")
PT2_REQUIRED = ("archive_format", "archive_version", "models/model.json", "data/sample_inputs/model.pt",
                "data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
PT2_PAYLOADS = {"data/weights/model_weights_config.json": "weight_", "data/constants/model_constants_config.json":
                "tensor_"}
PT2_JSON_BYTES = 64 << 20  # a config or program larger than this is refused before it is parsed
NATIVE = (".so", ".dll", ".dylib", ".cubin", ".ptx", ".fatbin", ".hsaco", ".o", ".a", ".pte", ".cpp")


def check_pt2(path: Path) -> None:
    """Refuse a `.pt2` file that is not a weights-only exported program (ExternalError naming the
    member): the archive is read with torch's own zip reader (the one `torch.export.load` uses), a
    member name that appears twice (which zip readers resolve differently) is refused first, every
    member must be of a kind in `PT2_MEMBERS`, every weight and constant raw tensor bytes described
    by JSON, and the sample inputs must load with `torch.load(weights_only=True)`."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        reader = torch._C.PyTorchFileReader(str(path))
        records = reader.get_all_records()
    except (zipfile.BadZipFile, OSError, RuntimeError) as err:
        raise ExternalError(f"{path}: not a torch.export archive ({one_line(err)})") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExternalError(f"{path}: refused: member {twice[0].split('/', 1)[-1]} appears twice (zip readers "
                            "disagree on which copy is read)")
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ExternalError(f"{path}: refused: not one root folder ({', '.join(sorted(roots)[:3])}); not a "
                            "torch.export archive")
    if sorted(records) != sorted(name.split("/", 1)[1] for name in names):
        raise ExternalError(f"{path}: refused: torch's zip reader and Python's list different members")
    missing = [name for name in PT2_REQUIRED if name not in records]
    if missing:
        raise ExternalError(f"{path}: not a torch.export archive of the current format (no {missing[0]}; older "
                            "archives are unpickled when loaded: export the model again with torch.export.save)")
    for record in records:
        if not PT2_MEMBERS.fullmatch(record):
            raise ExternalError(f"{path}: refused: member {record} is {member_kind(record)}")
    if reader.get_record("archive_format") != b"pt2" or reader.get_record("archive_version") != b"0":
        raise ExternalError(f"{path}: refused: archive format or version is not pt2 version 0")
    for config, prefix in PT2_PAYLOADS.items():
        folder = config.rsplit("/", 1)[0]
        for fqn, payload in pt2_json(path, reader, config).get("config", {}).items():
            if not isinstance(payload, dict):
                raise ExternalError(f"{path}: refused: {config}: {fqn} is not described by a mapping")
            stored = payload.get("path_name")
            if payload.get("use_pickle") is not False:
                raise ExternalError(f"{path}: refused: {fqn} is stored pickled ({config}: {stored!r}), which "
                                    "loading would unpickle")
            if not isinstance(stored, str) or not re.fullmatch(prefix + r"\d+", stored):
                raise ExternalError(f"{path}: refused: {fqn} is stored as {stored!r} ({config}), not as raw tensor "
                                    f"bytes {prefix}<n> (custom and opaque objects would be unpickled)")
            if not isinstance(payload.get("tensor_meta"), dict):
                raise ExternalError(f"{path}: refused: {fqn} has no tensor_meta ({config})")
            if f"{folder}/{stored}" not in records:
                raise ExternalError(f"{path}: refused: {config} names {folder}/{stored}, which is not in the archive")
    pt2_json(path, reader, "models/model.json")
    try:
        torch.load(io.BytesIO(reader.get_record("data/sample_inputs/model.pt")), weights_only=True)
    except Exception as err:
        raise ExternalError(f"{path}: refused: data/sample_inputs/model.pt is not weights-only "
                            f"({one_line(err)})") from None


def member_kind(record: str) -> str:
    """What a member outside the allow-list is, for the refusal."""
    from torch.export.pt2_archive import constants as pt2

    if record.startswith(pt2.AOTINDUCTOR_DIR):
        return "part of an AOTInductor compiled model (native code, which loading would run)"
    if record.startswith((pt2.EXECUTORCH_DIR, pt2.MTIA_DIR, pt2.XL_MODEL_WEIGHTS_DIR)) or record.endswith(NATIVE):
        return "a native or compiled payload, which a weights-only exported program does not have"
    if pt2.CUSTOM_OBJ_FILENAME_PREFIX in record or pt2.OPAQUE_OBJ_FILENAME_PREFIX in record:
        return "a custom or opaque object, which loading would unpickle"
    if record.endswith((".pt", ".pkl", ".pickle")):
        return "pickled (legacy weights or constants), which loading would unpickle"
    return "not part of a weights-only exported program"


def pt2_json(path: Path, reader, record: str) -> dict:
    """A JSON member of a `.pt2` archive, read as torch reads it (capped, parsed as a mapping)."""
    if reader.get_record_size(record) > PT2_JSON_BYTES:
        raise ExternalError(f"{path}: refused: {record} is over {PT2_JSON_BYTES >> 20} MiB")
    try:
        value = json.loads(reader.get_record(record))
    except (ValueError, RecursionError) as err:
        raise ExternalError(f"{path}: refused: {record} is not JSON ({one_line(err)})") from None
    if not isinstance(value, dict):
        raise ExternalError(f"{path}: refused: {record} is not a JSON mapping")
    return value


def load_pt2(path: Path) -> tuple[nn.Module, str]:
    """The module of a checked `.pt2` archive and the input shape its program declares."""
    check_pt2(path)
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as err:  # a program torch cannot rebuild (unknown operators, a newer schema, ...)
        raise ExternalError(f"{path}: torch.export cannot load it ({one_line(err)})") from None
    return module, exported_input(path, program)


def exported_input(path: Path, program) -> str:
    """The shape of an exported program's one user input, e.g. `(batch 1..inf, 3, 16, 16)`."""
    from torch.export.graph_signature import InputKind

    users = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    if len(users) != 1:
        raise ExternalError(f"{path}: refused: the program takes {len(users)} inputs (an image classifier takes "
                            "one batch of images)")
    [node] = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0]]
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return ""
    dims = []
    for dim in value.shape:
        if isinstance(dim, int):
            dims.append(str(dim))
            continue
        bounds = program.range_constraints.get(dim.node.expr)
        given = f" {bounds.lower}..{bounds.upper}".replace("int_oo", "inf") if bounds is not None else ""
        dims.append(f"{dim}{given}")
    return f"({', '.join(dims)})"


def load(name: str, settings: dict, tracking_uri: str | None, cache: Path | None) -> Loaded:
    path, content = model_file(name, settings)
    core, expects = load_pt2(path)
    return Loaded(core, True, content, expects)
