"""``python -m annealbench.cli``."""

from annealbench.cli import main

main()
