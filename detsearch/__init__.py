"""detsearch: hyperparameter and detection-threshold search for TensorFlow models.

`detsearch.search` (the TF2/Keras API) and `detsearch.moxing` (the MoXing-compatible facade)
share one selector (`detsearch.selector`) and one `ParamSpec`. Importing this package does not
import TensorFlow; the entry points that need it import it when called.
"""

from detsearch.params import ParamSpec

__all__ = ["ParamSpec", "search"]
__version__ = "0.1.0"


def search(*args, **kwargs):
    """Chooses learning_rate, momentum and weight_decay for a Keras model; see `detsearch.keras_search.search`."""
    from detsearch.keras_search import search as _search

    return _search(*args, **kwargs)
