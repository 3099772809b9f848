"""The one exception the helpers raise for a problem the user can fix."""


class TutorialError(RuntimeError):
    """A problem with the user's input or setup; the message says what to do."""

    def _render_traceback_(self):
        # IPython/Jupyter show this single line instead of a full traceback.
        return [f"{type(self).__name__}: {self}"]
