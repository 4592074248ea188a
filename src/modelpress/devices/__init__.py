"""Where measurements run: this machine (``local``), or another one over ssh or adb.

``spec.py`` reads the devices file, ``transport.py`` is what a kind of device implements
(``ssh.py``, ``adb.py``), ``remote.py`` ships ``runner.py`` (standard library + numpy + the
runtime: the one file that travels) and turns what comes back into results records. See
docs/devices.md.
"""
