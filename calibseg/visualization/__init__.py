from .reliability import plot_classwise_reliability, plot_distance_bands, plot_reliability_diagram

__all__ = ['plot_classwise_reliability', 'plot_distance_bands', 'plot_reliability_diagram']
