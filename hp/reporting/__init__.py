"""The report, its sections and figures, the sweep, and the published results set beside hp's."""
