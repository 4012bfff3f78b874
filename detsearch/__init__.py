"""detsearch: hyperparameter and detection-threshold search for TensorFlow models.

`detsearch.search` (the TF2/Keras API) and `detsearch.moxing` (the MoXing-compatible facade)
share one selector (`detsearch.selector`) and one `ParamSpec`. Importing this package does not
import TensorFlow; the entry points that need it import it when called.
"""

from importlib import metadata as _metadata

from detsearch.params import ParamSpec

__all__ = ["ParamSpec", "search"]

try:
    __version__ = _metadata.version("detsearch")  # pyproject.toml's, as installed
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"


def search(*args, **kwargs):
    """Chooses learning_rate, momentum and weight_decay for a Keras model; see `detsearch.keras_search.search`."""
    from detsearch.keras_search import search as _search

    return _search(*args, **kwargs)
