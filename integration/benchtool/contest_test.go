package main

import (
	"context"
	"slices"
	"testing"
)

// stealScript is a bench.cpu that makes the n-th run see steal[n] percent
// of the CPU time stolen: each call advances the clock by 100 jiffies.
type stealScript struct {
	steal []float64
	calls int
	s     cpuSample
}

func (f *stealScript) sample() cpuSample {
	if f.calls%2 == 1 { // the sample after a run
		f.s.all += 100
		f.s.busy += 100
		f.s.steal += uint64(f.steal[f.calls/2])
	}
	f.calls++
	return f.s
}

func TestContestRepeatsDisturbedRuns(t *testing.T) {
	tests := []struct {
		name      string
		maxSteal  float64
		steal     []float64 // per try, in the order contest makes them
		runs      []float64 // the samples kept
		noted     []float64
		stealMax  float64
		triesMade int
	}{
		{name: "quiet runs are kept", maxSteal: 10, steal: []float64{0, 5},
			runs: []float64{1, 2}, noted: []float64{10, 20}, stealMax: 5, triesMade: 2},
		{name: "a disturbed run is repeated until a quiet one", maxSteal: 10, steal: []float64{30, 20, 5, 0},
			runs: []float64{3, 4}, noted: []float64{30, 40}, stealMax: 5, triesMade: 4},
		{name: "at most two repeats, the least disturbed kept", maxSteal: 10, steal: []float64{30, 25, 40, 0},
			runs: []float64{2, 4}, noted: []float64{20, 40}, stealMax: 25, triesMade: 4},
		{name: "threshold 0 never repeats", maxSteal: 0, steal: []float64{50, 60},
			runs: []float64{1, 2}, noted: []float64{10, 20}, stealMax: 60, triesMade: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			script := &stealScript{steal: tc.steal}
			b := &bench{cfg: config{runs: 2, maxSteal: tc.maxSteal}, ctx: context.Background(), cpu: script.sample}
			tries := 0
			c := contestant{"tool", func(context.Context) (float64, error) {
				tries++
				b.note(float64(tries * 10))
				return float64(tries), nil
			}}
			res := b.contest("0", "units", c)
			if len(res) != 1 || res[0].err != nil {
				t.Fatalf("contest: %+v", res)
			}
			r := res[0]
			if !slices.Equal(r.runs, tc.runs) || !slices.Equal(r.noted, tc.noted) || r.stealMax != tc.stealMax || tries != tc.triesMade {
				t.Errorf("kept runs %v noted %v steal max %v after %d tries; want %v, %v, %v after %d",
					r.runs, r.noted, r.stealMax, tries, tc.runs, tc.noted, tc.stealMax, tc.triesMade)
			}
		})
	}
}
