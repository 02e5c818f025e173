"""``radfusion serve``: a local web app in which a clinician scores a new patient."""

from radfusion.serve.app import ServeSettings, create_app
from radfusion.serve.uploads import Limits

__all__ = ["Limits", "ServeSettings", "create_app"]
