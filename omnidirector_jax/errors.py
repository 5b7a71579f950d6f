"""User-facing errors: raised for bad input, printed by the CLI as one line."""


class OmniDirectorError(ValueError):
    """Bad input (a trajectory, a video, a config) described in one readable sentence."""


class TrajectoryError(OmniDirectorError):
    """A camera trajectory that is malformed or cannot be used."""


class ConfigError(OmniDirectorError):
    """An invalid configuration key, value or override."""
