"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class TrainingError(Exception):
    """Bad input (data, spec, flags, output path) detected before or during a run.

    Raised with a message meant for the user; the CLI prints it without a traceback.
    """
