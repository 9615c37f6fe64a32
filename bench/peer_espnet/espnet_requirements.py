"""Print the installed `espnet` distribution's core requirements (no extras) minus its `setuptools<74` pin.

Runs inside the ESPnet venv (bench/peer_espnet.py installs espnet with --no-deps, then these). Why: espnet 202511
pins setuptools<74 while torch 2.13 requires setuptools>=77.0.3, so pip stops with ResolutionImpossible; espnet2
on Python 3.11 never imports setuptools or pkg_resources, so dropping the pin changes nothing it runs.
"""
import importlib.metadata as md
import re

for req in md.requires("espnet") or []:
    if "extra ==" in req or re.match(r"setuptools\b", req):
        continue
    print(req)
