import os

# Plots and progress bars need no display; tests never open windows.
os.environ.setdefault("MPLBACKEND", "Agg")
