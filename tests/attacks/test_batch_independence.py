"""`crafting.batch_size` and out-of-memory halving are speed options: every registered attack crafts
the same set, bit for bit, at batch size 0 (the whole batch), 1 and 7 and after a halving; the
attacks with random draws (`draws`) are exactly those whose result depends on the RNG state."""
import pytest
import torch

from attacks import ATTACKS, RNG_PIECE, CraftingModule, craft, piece_seed

FAST = {"steps": 3, "N": 2, "m": 2, "len_kernel": 5, "diversity_prob": 0.5, "beta": 20.0}  # far neighbours
LIMIT = RNG_PIECE  # the simulated device fits at most this many images


def setting(name: str) -> dict:
    params = {k: v for k, v in FAST.items() if k in ATTACKS[name].defaults}
    if name in ("difgsm", "tifgsm"):
        params["random_start"] = True
    return {"name": name, "eps": 8 / 255, **params}


class SmallDevice(torch.nn.Module):
    """The model on a device that runs out of memory for more than `LIMIT` images a pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x):
        if len(x) > LIMIT:
            raise torch.OutOfMemoryError(f"{len(x)} images do not fit")
        self.sizes.append(len(x))
        return self.model(x)


def crafted(model, batches, name, **options) -> torch.Tensor:
    module = CraftingModule(model, setting(name), "multiclass", seed=3, **options)
    return torch.cat([module.predict_step(batch, 0)[1] for batch in batches])


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


@pytest.fixture
def case(make_case):
    model, images, labels = make_case("multiclass", channels=3, height=10, width=10, n=22)
    return model, [(images[:12], labels[:12], 0), (images[12:], labels[12:], 1)]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_crafts_the_same_bits_whatever_the_crafting_batch(name, case):
    model, batches = case
    whole = crafted(model, batches, name)
    for size in (1, 7):
        assert torch.equal(bits(crafted(model, batches, name, batch_size=size)), bits(whole)), size
    small = SmallDevice(model)
    assert torch.equal(bits(crafted(small, batches, name, batch_size=0, auto_batch=True)), bits(whole))
    if ATTACKS[name].draws:  # crafted in fixed pieces, never halved
        assert max(small.sizes) <= RNG_PIECE
    else:  # 12 did not fit, 6 did and was kept
        assert max(small.sizes) == 6


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_draws_flag_says_which_attacks_depend_on_the_rng(name, make_case):
    model, images, labels = make_case("multiclass", channels=3, height=12, width=12, n=4)
    results = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        results.append(craft(model, images, labels, setting(name), "multiclass"))
    assert torch.equal(*results) != ATTACKS[name].draws


@pytest.mark.parametrize("name", [name for name in sorted(ATTACKS) if ATTACKS[name].draws])
def test_a_piece_draws_from_the_set_seed_the_batch_and_its_first_image(name, case):
    model, batches = case
    images, labels, batch_id = batches[0]
    expected = []
    for start in range(0, len(images), RNG_PIECE):  # written out: one call per aligned piece
        torch.manual_seed(piece_seed(3, batch_id, start))
        expected.append(craft(model, images[start:start + RNG_PIECE], labels[start:start + RNG_PIECE],
                              setting(name), "multiclass"))
    got = CraftingModule(model, setting(name), "multiclass", seed=3, batch_size=7).predict_step(batches[0], 0)[1]
    assert torch.equal(bits(got), bits(torch.cat(expected)))
    # the same piece of another batch, or of another set seed, draws other numbers
    other = CraftingModule(model, setting(name), "multiclass", seed=4).predict_step(batches[0], 0)[1]
    renumbered = CraftingModule(model, setting(name), "multiclass", seed=3).predict_step(
        (images, labels, 5), 0)[1]
    assert not torch.equal(other, got) and not torch.equal(renumbered, got)
