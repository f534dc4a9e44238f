from genfoundry.cli import main

main()
