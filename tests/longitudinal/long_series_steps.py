"""Constants shared by the longitudinal tests and their conftest."""

#: Checkpoint steps of the trained series fixture.
STEPS = [0, 4, 8, 12, 16, 20, 24]
