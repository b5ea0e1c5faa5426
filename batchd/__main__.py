from batchd.cli.main import main

raise SystemExit(main())
