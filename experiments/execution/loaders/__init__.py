"""The loaders of external models, one module per format, found by `experiments.execution.external`.

A loader module names its format (`FORMAT`, one of `design.external.FORMATS`) and gives
`load(name, settings, tracking_uri, cache) -> Loaded`: the model's core (an `nn.Module` scoring the
model's own input), whether it gives gradients, the sha256 of its file(s), the input shape it
declares and, for an endpoint, its `Endpoint`. `common` holds what several loaders share.
"""
