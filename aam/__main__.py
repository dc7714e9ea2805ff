"""``python -m aam`` entry point."""

from aam.cli import main

if __name__ == "__main__":
    main()
