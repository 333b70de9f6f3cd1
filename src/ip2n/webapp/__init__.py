"""The web app of `ip2n serve`: a Gradio page over `EditPipeline`.

`session` holds what an edit request does (pure Python, tested without a browser); `app` builds the
page and runs the server (it imports Gradio, so import it only when serving).
"""

from ip2n.webapp.session import (
    EditOutcome,
    EditSession,
    RequestError,
    RequestTimeoutError,
    WebEditSettings,
)

__all__ = ["EditOutcome", "EditSession", "RequestError", "RequestTimeoutError", "WebEditSettings"]
