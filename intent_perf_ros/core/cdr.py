"""Return codes of ``input_kernels.read_tracked_humans``, which reads a ``TrackedHumans`` message from its
serialized bytes; numba-free, so that the node and the kernel module share them without the node
importing numba."""

CDR_OK, CDR_UNSUPPORTED, CDR_MALFORMED = 0, 1, 2
CDR_HEADER_FIELDS = 5  # its header_out: stamp sec, stamp nanosec, frame_id offset, frame_id length, humans
