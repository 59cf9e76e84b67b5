"""The metric kinds, one module each; every module here registers its kinds with `registry.register` when
`registry.kinds()` imports it."""
