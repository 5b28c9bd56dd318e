from .run_setup import check_data_paths, iter_dataset_cfgs, load_run_config

__all__ = ['check_data_paths', 'iter_dataset_cfgs', 'load_run_config']
