import sys

from mtl.data.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
