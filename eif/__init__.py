"""eif: debug deep metric learning models and their datasets with influence functions."""

__version__ = "0.1.0"
