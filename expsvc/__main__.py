from expsvc.cli import main

main()
