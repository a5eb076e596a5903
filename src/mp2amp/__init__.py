"""mp2amp: move a Mixpanel project into Amplitude, and prove nothing was lost."""

__version__ = "0.1.0"
