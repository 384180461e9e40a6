"""`python -m ssmbench ...` is the same as the `ssmbench` console script."""

from ssmbench.cli import main

if __name__ == "__main__":
    main()
