"""Say which OpenCV this interpreter imports, and fail unless it is the one a CI run expects.

python scripts/which-opencv.py --expect debian   # Debian's python3-opencv, no pip wheel
python scripts/which-opencv.py --expect 4        # a 4.x wheel, and only one wheel
"""

from __future__ import annotations

import argparse
import re
import sys

import cv2

from streamer.commands.entry import installed_wheels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=["debian", "4", "5"], required=True)
    expect = parser.parse_args().expect
    wheels = installed_wheels()
    gstreamer = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    print(
        f"OpenCV {cv2.__version__} from {cv2.__file__} (GStreamer: {gstreamer.group(1) if gstreamer else '?'}; "
        f"pip wheels: {', '.join(wheels) or 'none'})"
    )
    if expect == "debian":
        ok = cv2.__file__.startswith("/usr/lib/python3/") and not wheels
    else:
        ok = cv2.__version__.startswith(expect + ".") and len(wheels) == 1
    if not ok:
        print(f"error: expected the {expect} OpenCV here; see make test-opencv in the Makefile", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
