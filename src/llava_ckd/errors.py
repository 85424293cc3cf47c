"""The one base of every error that means a file, recipe, setting or model the user gave cannot be used (not a
bug of this program). The CLI turns it into one `error: ...` line; each subclass keeps the builtin it refines
(`ValueError`, `OSError`, `LookupError`), so callers that catch those go on working."""


class UserError(Exception):
    """Something the user gave cannot be used; the message names the file, line or field."""
