class FleetstreamError(Exception):
    """Base of every error fleetstream reports to a user: a one-line message and a hint."""
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
