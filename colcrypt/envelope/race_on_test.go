//go:build race

package envelope_test

const raceEnabled = true // sync.Pool drops items at random under the race detector
