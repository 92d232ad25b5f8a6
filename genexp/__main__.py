from genexp.cli import main

main()
