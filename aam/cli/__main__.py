"""``python -m aam.cli`` entry point (the form the reference tool's torchrun command lines use)."""

from aam.cli import main

if __name__ == "__main__":
    main()
