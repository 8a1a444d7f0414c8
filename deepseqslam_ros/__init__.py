"""DeepSeqSLAM for ROS 2: CNN descriptors + LSTM sequence head for sequence-based place recognition."""
__version__ = '0.1.0'
