// Command racecheck prints whether it was built with -race; BuildBinary's
// test uses it.
package main

import "fmt"

func main() { fmt.Printf("race=%v\n", raceEnabled) }
