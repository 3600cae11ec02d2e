package columns

import "testing"

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		s, sub string
		want   bool
	}{
		{"SELECT * FROM Employees", "employees", true},
		{"select * from public.EMPLOYEES e", "employees", true},
		{`select * from "employees"`, "employees", true},
		{"select * from employee", "employees", false},
		{"select 1", "employees", false},
		{`select * from U&"\0065mployees"`, "u&", true},
		{"", "x", false},
	} {
		if got := containsFold(c.s, c.sub); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.s, c.sub, got)
		}
	}
}
