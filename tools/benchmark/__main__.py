from .steps import main

main()
