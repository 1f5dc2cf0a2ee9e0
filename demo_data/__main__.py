"""``python -m demo_data``: generate both demo sets."""

from demo_data.cli import main

if __name__ == "__main__":
    main()
