"""Small shared utilities. This package imports nothing heavy, so the pure core can use
:mod:`calibseg.utils.validation` and :mod:`calibseg.utils.distributed` without OpenMMLab; the run-config
helpers (which need mmengine) are imported from :mod:`calibseg.utils.run_setup` explicitly."""
