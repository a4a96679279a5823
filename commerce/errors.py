"""Domain errors of the commerce app, each with a stable code."""


class CommerceError(Exception):
    """Base class; ``code`` is stable and safe to show to API clients."""

    code = "commerce_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImportFormatError(CommerceError):
    """The file cannot be imported as a whole: wrong format, columns or mapping."""

    code = "import_format_invalid"
