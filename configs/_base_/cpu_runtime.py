# mmseg's runtime, calibseg's modules and reliability diagrams, for CPU runs (one process or torchrun + gloo).
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['calibseg'], allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
custom_hooks = [dict(type='ReliabilityDiagramHook')]
