"""eif: debug deep metric learning models and their datasets with influence functions."""

__version__ = "0.1.0"

import logging as _logging

# A library's loggers stay silent until the application configures logging (the Hydra app does; a
# notebook may): without this, Python's last-resort handler would repeat every warning eif also prints.
_logging.getLogger("eif").addHandler(_logging.NullHandler())
