/** @kay/cli — the kay command line. Programmatic use: `main(argv)` returns the exit code. */
export { main } from './main.js'
