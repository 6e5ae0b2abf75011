// Command broken does not compile: BuildBinary's failure test builds it.
package main

func main() { notDefined() }
