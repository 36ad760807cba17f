from pipeflow.cli import main

raise SystemExit(main())
