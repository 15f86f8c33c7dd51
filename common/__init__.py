"""Code shared by the three functions: settings, the job store and its engine."""
