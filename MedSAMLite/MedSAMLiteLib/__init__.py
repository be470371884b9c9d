"""MedSAMLite's core: the segmenters, their conversion, the engine process and the headless command."""


def one_line(error: BaseException) -> str:
    """An error as the one line a user is shown: its message's first line, or its type's name."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
