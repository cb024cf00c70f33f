"""`python -m dicomnode.cli`."""

from dicomnode.cli.main import main

raise SystemExit(main())
