"""`python -m nima` runs the CLI."""

from nima.cli import main

if __name__ == "__main__":
    main()
