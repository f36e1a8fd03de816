"""Plain constants and state shared by the belief kernels and the Python around them (no numba).

Kernel parameters travel as one float64 array (indices below) so a numba signature stays fixed
whatever the configuration. Counters are one int64 array (indices below) updated in place. This
module imports no numba, so the tracker and belief_node can use it when the kernels come compiled
ahead of time (core/aot.py); the kernels read these names as compile-time constants, and an edit
here changes the digest of their compiled modules (a rebuild, or the JIT until then).
"""
from __future__ import annotations

import numpy as np

# Parameter indices (see BeliefConfig for meaning and units).
P_RELAX = 0  # relaxation time towards the goal-directed velocity, s (relax_time_s or bayes_relax_time_s)
P_GOAL_NOISE = 1  # velocity diffusion under a goal, m/s per sqrt(s)
P_WANDER_NOISE = 2  # velocity diffusion while wandering, m/s per sqrt(s)
P_POS_SIGMA = 3  # observation noise of positions, m
P_VEL_SIGMA = 4  # observation noise of velocities, m/s
P_SWITCH_RATE = 5  # change-of-mind rate, 1/s
P_ARRIVE = 6  # distance at which a goal counts as reached, m
P_ESS = 7  # resample when ESS < P_ESS * particles
P_GP_WEIGHT = 8  # tempering of the GP evidence (0 ignores pred_mean)
P_GP_SIGMA = 9  # spread of the GP's predicted endpoint, m
P_TIMEOUT = 10  # drop a track not seen for this long, s
P_FLOW_CELL = 11  # flow-field cell size, m
P_FLOW_X0 = 12  # flow-field origin (corner of cell 0, 0), m
P_FLOW_Y0 = 13
P_FLOW_SHRINK = 14  # pseudo-observations of the straight line in each cell
P_VEL_REL = 15  # velocity observation noise growing with speed: sd^2 = vel_sigma^2 + (vel_rel |v|)^2
N_PARAMS = 16

# Counter indices.
C_POOL_FULL = 0  # observations of new ids that found no free slot
C_RESAMPLES = 1
C_CREATED = 2
C_DROPPED = 3
C_RESETS = 4  # particle clouds re-initialised because every weight underflowed
N_COUNTERS = 5

# Return codes of the update kernels.
OK = 0
ERR_NONFINITE = -1
ERR_DUPLICATE = -2
ERR_TIME = -3


MAX_COORDINATE = 1e5  # [m] no map is larger; the nodes' input rules drop humans beyond it
MAX_SPEED = 1e3  # [m/s]


def new_state(seed: int) -> np.ndarray:
    """A one-word state of the kernels' generator (rng.py) for ``seed`` (any Python int)."""
    return np.array([np.uint64(seed % (1 << 64))], dtype=np.uint64)
