package coltype

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PostgreSQL's calendar constants (datatype/timestamp.h): day 0 of date and timestamp is 2000-01-01,
// the proleptic Gregorian calendar, astronomical year numbering inside (1 BC is year 0).
const (
	postgresEpochJDate = 2451545 // date2j(2000, 1, 1)
	unixEpochAt2000    = 946684800
	usPerSec           = 1_000_000
	usPerDay           = 86_400 * usPerSec
	dateEndJulian      = 2147483494 // first day after 5874897-12-31
	timestampEndJulian = 109203528  // 294277-01-01
	minTimestamp       = -211813488000000000
	endTimestamp       = 9223371331200000000
	dateNegInfinity    = math.MinInt32
	datePosInfinity    = math.MaxInt32
	tsNegInfinity      = math.MinInt64
	tsPosInfinity      = math.MaxInt64
)

// date2j and j2date are PostgreSQL's Julian day conversions, valid far beyond the supported range.
func date2j(year, month, day int) int {
	if month > 2 {
		month++
		year += 4800
	} else {
		month += 13
		year += 4799
	}
	century := year / 100
	julian := year*365 - 32167
	julian += year/4 - century + century/4
	julian += 7834*month/256 + day
	return julian
}

func j2date(jd int) (year, month, day int) {
	julian := uint32(jd) + 32044
	quad := julian / 146097
	extra := (julian-quad*146097)*4 + 3
	julian += 60 + quad*3 + extra/146097
	quad = julian / 1461
	julian -= quad * 1461
	y := julian * 4 / 1461
	if y != 0 {
		julian = (julian+305)%365 + 123
	} else {
		julian = (julian+306)%366 + 123
	}
	y += quad * 4
	year = int(y) - 4800
	quad = julian * 2141 / 65536
	day = int(julian - 7834*quad/256)
	month = int((quad+10)%12 + 1)
	return
}

func daysInMonth(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// wallTime is a parsed date/time literal before any time zone is applied.
type wallTime struct {
	special int8  // 0, or -1/+1 for -infinity/infinity
	days    int64 // days since 2000-01-01 of the wall date
	us      int64 // microseconds since the wall date's midnight (may be 24h for "24:00:00")
	hasTime bool
	zone    int8 // 0 none, 1 numeric offset (offset), 2 named (loc)
	offset  int64
	loc     *time.Location
}

func (w wallTime) wallUS() int64 { return w.days*usPerDay + w.us }

// parseDateTime parses the ISO 8601 forms PostgreSQL accepts and drivers send:
//
//	YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff...]]][ ][zone][ BC|AD]
//
// with zone Z, +HH, +HHMM, +HH:MM, +HH:MM:SS (or -), UTC, GMT or a tz database name, and the special
// values infinity, -infinity and epoch. Day/month-order forms that depend on DateStyle, time zone
// abbreviations and the relative values now/today/tomorrow/yesterday are rejected with
// ErrUnsupported: the first are ambiguous, the others would make the stored value depend on when and
// where the proxy parsed it.
func parseDateTime(t Type, format int16, s []byte) (wallTime, *ValueError) {
	s = trimSpace(s)
	ls := strings.ToLower(string(s))
	if len(ls) != len(s) { // non-ASCII letters: never part of a valid date, and would shift indexes
		return wallTime{}, valueErr(t, format, "invalid syntax")
	}
	switch ls {
	case "infinity", "+infinity":
		return wallTime{special: 1}, nil
	case "-infinity":
		return wallTime{special: -1}, nil
	case "epoch":
		return wallTime{days: -10957, hasTime: true, zone: 1}, nil // 1970-01-01 00:00:00+00
	case "now", "today", "tomorrow", "yesterday", "allballs":
		return wallTime{}, unsupported(t, format, "relative values (now, today, tomorrow, yesterday, allballs) would be fixed by the proxy; use a SQL expression such as now() instead")
	}
	p := dtParser{s: ls}
	year, ok := p.digits(4, 9)
	if !ok || !p.eat('-') {
		return wallTime{}, unsupported(t, format, "only ISO 8601 dates (YYYY-MM-DD, at least four year digits) are supported")
	}
	month, ok1 := p.digits(1, 2)
	ok2 := p.eat('-')
	day, ok3 := p.digits(1, 2)
	if !ok1 || !ok2 || !ok3 {
		return wallTime{}, p.fail(t, format)
	}
	var w wallTime
	var hour, minute, sec, us int
	// Time part.
	save := p.i
	if p.eat('t') || p.spaces() {
		if h, ok := p.digits(1, 2); ok && p.eat(':') {
			m, ok := p.digits(1, 2)
			if !ok {
				return wallTime{}, p.fail(t, format)
			}
			hour, minute, w.hasTime = h, m, true
			if p.eat(':') {
				if sec, ok = p.digits(1, 2); !ok {
					return wallTime{}, p.fail(t, format)
				}
				if p.eat('.') { // "05." is accepted as ".0", as PostgreSQL does
					start := p.i
					for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
						p.i++
					}
					// PostgreSQL reads the fraction as a double and rounds to the microsecond with
					// rint (half to even); doing the same gives the same value for >6 digits.
					f, _ := strconv.ParseFloat("0."+p.s[start:p.i]+"0", 64)
					us = int(math.RoundToEven(f * 1e6))
				}
			}
		} else {
			p.i = save
		}
	}
	// Zone.
	afterDate := !w.hasTime && p.i == save
	p.spaces()
	if p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == '-' && afterDate && p.i == save:
			// "2024-01-02-05" is one malformed date field for PostgreSQL ('-' continues the date),
			// not a date and an offset; "2024-01-02+05" is a date and an offset.
			return wallTime{}, p.fail(t, format)
		case c == '+' || c == '-':
			p.i++
			off, ok := p.offset()
			if !ok {
				return wallTime{}, p.fail(t, format)
			}
			if c == '-' {
				off = -off
			}
			w.zone, w.offset = 1, int64(off)
		case c >= 'a' && c <= 'z':
			start := p.i
			for p.i < len(p.s) && !isSpace(p.s[p.i]) {
				p.i++
			}
			name := string(s[start:p.i]) // original case: tz database names are case-sensitive
			if ln := p.s[start:p.i]; ln == "bc" || ln == "ad" {
				p.i = start
				break
			}
			loc, err := zoneByName(name)
			if errors.Is(err, ErrUnsupported) {
				return wallTime{}, unsupported(t, format, "time zone abbreviations are not supported: use a numeric offset, UTC or a tz database name such as Europe/Paris")
			}
			if err != nil {
				return wallTime{}, valueErr(t, format, "unknown time zone")
			}
			w.zone, w.loc = 2, loc
		}
	}
	p.spaces()
	bc := false
	if strings.HasPrefix(p.s[p.i:], "bc") {
		bc = true
		p.i += 2
	} else if strings.HasPrefix(p.s[p.i:], "ad") {
		p.i += 2
	}
	if p.i != len(p.s) {
		return wallTime{}, p.fail(t, format)
	}
	if year == 0 {
		return wallTime{}, valueErr(t, format, "date/time field value out of range (there is no year 0)")
	}
	if bc {
		year = 1 - year
	}
	if month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) {
		return wallTime{}, valueErr(t, format, "date/time field value out of range")
	}
	// As PostgreSQL: a leap second (:60) is accepted and rolls over, and the time of day may reach
	// 24:00:00 but not pass it.
	if minute > 59 || sec > 60 || ((int64(hour)*60+int64(minute))*60+int64(sec))*usPerSec+int64(us) > usPerDay {
		return wallTime{}, valueErr(t, format, "date/time field value out of range")
	}
	w.days = int64(date2j(year, month, day) - postgresEpochJDate)
	if w.days < -postgresEpochJDate-1 || w.days > dateEndJulian-postgresEpochJDate {
		// Far outside every type's range; also keeps days*usPerDay from overflowing.
		return wallTime{}, valueErr(t, format, "date/time value out of range")
	}
	w.us = ((int64(hour)*60+int64(minute))*60+int64(sec))*usPerSec + int64(us)
	return w, nil
}

type dtParser struct {
	s string
	i int
}

func (p *dtParser) fail(t Type, format int16) *ValueError {
	return valueErr(t, format, "invalid syntax (expected ISO 8601, e.g. 2024-01-02 03:04:05.678+01)")
}

func (p *dtParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *dtParser) spaces() bool {
	start := p.i
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
	return p.i > start
}

func (p *dtParser) digits(min, max int) (int, bool) {
	start, v := p.i, 0
	for p.i < len(p.s) && p.i-start < max && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		v = v*10 + int(p.s[p.i]-'0')
		p.i++
	}
	return v, p.i-start >= min
}

// offset parses HH, HHMM, HH:MM, HH:MM:SS after a sign; the result is in seconds east of UTC.
func (p *dtParser) offset() (int, bool) {
	start := p.i
	h, ok := p.digits(1, 2)
	if !ok {
		return 0, false
	}
	m, sec := 0, 0
	if p.eat(':') {
		if m, ok = p.digits(2, 2); !ok {
			return 0, false
		}
		if p.eat(':') {
			if sec, ok = p.digits(2, 2); !ok {
				return 0, false
			}
		}
	} else if p.i-start == 2 {
		if mm, ok := p.digits(2, 2); ok {
			m = mm
		}
	}
	if h > 15 || m > 59 || sec > 59 { // PostgreSQL's limit is 15:59:59
		return 0, false
	}
	return (h*60+m)*60 + sec, true
}

var zoneCache sync.Map // name -> *time.Location

// zoneByName resolves UTC/GMT and tz database names ("Europe/Paris"), caching them: LoadLocation
// reads a file. Abbreviations ("CET", "EST") are refused: PostgreSQL resolves them through its own
// abbreviation table, which does not agree with the tz database files of the same names.
func zoneByName(name string) (*time.Location, error) {
	switch strings.ToUpper(name) {
	case "Z", "UTC", "GMT", "UT", "ZULU", "ETC/UTC", "ETC/GMT":
		return time.UTC, nil
	}
	if !strings.Contains(name, "/") {
		return nil, ErrUnsupported
	}
	if l, ok := zoneCache.Load(name); ok {
		return l.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zoneCache.Store(name, loc)
	return loc, nil
}

// offsetAt is the UTC offset (seconds east) of loc at the instant us (microseconds since 2000).
func offsetAt(loc *time.Location, us int64) int64 {
	_, off := time.Unix(floorDiv(us, usPerSec)+unixEpochAt2000, 0).In(loc).Zone()
	return int64(off)
}

// localToUTC interprets a wall time in loc as PostgreSQL does (DetermineTimeZoneOffset): a time that
// falls in a spring-forward gap takes the offset from before the transition, an ambiguous time in a
// fall-back overlap takes the offset from after it; in both cases the later of the two instants.
func localToUTC(loc *time.Location, wall int64) int64 {
	before := offsetAt(loc, wall-usPerDay)
	after := offsetAt(loc, wall+usPerDay)
	tb, ta := wall-before*usPerSec, wall-after*usPerSec
	if before == after {
		if off := offsetAt(loc, tb); off != before { // a transition within the day
			return wall - off*usPerSec
		}
		return tb
	}
	validB, validA := offsetAt(loc, tb) == before, offsetAt(loc, ta) == after
	switch {
	case validB && !validA:
		return tb
	case validA && !validB:
		return ta
	}
	return max(tb, ta)
}

func appendInt64(dst []byte, v int64) []byte { return binary.BigEndian.AppendUint64(dst, uint64(v)) }

func canonicalDate(dst []byte, format int16, src []byte) ([]byte, error) {
	if format == BinaryFormat {
		if len(src) != 4 {
			return dst, valueErr(Date, format, "%d bytes, want 4", len(src))
		}
		d := int32(binary.BigEndian.Uint32(src))
		if d != dateNegInfinity && d != datePosInfinity && !validDate(int64(d)) {
			return dst, valueErr(Date, format, "date out of range")
		}
		return append(dst, src...), nil
	}
	w, err := parseDateTime(Date, format, src)
	if err != nil {
		return dst, err
	}
	var d int64
	switch w.special {
	case 1:
		d = datePosInfinity
	case -1:
		d = dateNegInfinity
	default:
		d = w.days // a time and a zone are accepted and ignored, as by date_in
		if !validDate(d) {
			return dst, valueErr(Date, format, "date out of range")
		}
	}
	return binary.BigEndian.AppendUint32(dst, uint32(int32(d))), nil
}

func validDate(d int64) bool {
	return d >= -postgresEpochJDate && d < dateEndJulian-postgresEpochJDate
}

func validTimestamp(us int64) bool { return us >= minTimestamp && us < endTimestamp }

func canonicalTimestamp(dst []byte, t Type, format int16, src []byte, s *Session) ([]byte, error) {
	if format == BinaryFormat {
		if len(src) != 8 {
			return dst, valueErr(t, format, "%d bytes, want 8", len(src))
		}
		v := int64(binary.BigEndian.Uint64(src))
		if v != tsNegInfinity && v != tsPosInfinity && !validTimestamp(v) {
			return dst, valueErr(t, format, "timestamp out of range")
		}
		return append(dst, src...), nil
	}
	w, err := parseDateTime(t, format, src)
	if err != nil {
		return dst, err
	}
	switch w.special {
	case 1:
		return appendInt64(dst, tsPosInfinity), nil
	case -1:
		return appendInt64(dst, tsNegInfinity), nil
	}
	if w.days < -postgresEpochJDate-1 || w.days > timestampEndJulian-postgresEpochJDate {
		return dst, valueErr(t, format, "timestamp out of range")
	}
	v := w.wallUS()
	if t == Timestamptz {
		switch w.zone {
		case 1:
			v -= w.offset * usPerSec
		case 2:
			v = localToUTC(w.loc, v)
		default:
			v = localToUTC(s.location(), v)
		}
	} // timestamp without time zone ignores a zone in its input, as PostgreSQL does
	if !validTimestamp(v) {
		return dst, valueErr(t, format, "timestamp out of range")
	}
	return appendInt64(dst, v), nil
}

// appendDateText appends a date in the DateStyle's form (EncodeDateOnly, without " BC") and reports
// whether the year is BC.
func appendDateText(dst []byte, jd int, style int, dmy bool) ([]byte, bool) {
	y, m, d := j2date(jd)
	bc := y <= 0
	if bc {
		y = 1 - y
	}
	first, second, sep := m, d, byte('/')
	if dmy {
		first, second = d, m
	}
	switch style {
	case styleISO:
		dst = appendPadded(dst, y, 4)
		dst = append(dst, '-')
		dst = appendPadded(dst, m, 2)
		dst = append(dst, '-')
		return appendPadded(dst, d, 2), bc
	case styleGerman:
		first, second, sep = d, m, '.'
	case stylePostgres:
		sep = '-'
	}
	dst = appendPadded(dst, first, 2)
	dst = append(dst, sep)
	dst = appendPadded(dst, second, 2)
	dst = append(dst, sep)
	return appendPadded(dst, y, 4), bc
}

func appendPadded(dst []byte, v, width int) []byte {
	var buf [12]byte
	b := strconv.AppendInt(buf[:0], int64(v), 10)
	for i := len(b); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, b...)
}

func renderDate(dst []byte, format int16, canon []byte, s *Session) ([]byte, error) {
	if len(canon) != 4 {
		return dst, corrupt(Date, "wrong length")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	style, dmy, err := s.dateStyle(Date)
	if err != nil {
		return dst, err
	}
	switch d := int32(binary.BigEndian.Uint32(canon)); d {
	case datePosInfinity:
		return append(dst, "infinity"...), nil
	case dateNegInfinity:
		return append(dst, "-infinity"...), nil
	default:
		out, bc := appendDateText(dst, int(d)+postgresEpochJDate, style, dmy)
		if bc {
			out = append(out, " BC"...)
		}
		return out, nil
	}
}

var (
	dayNames   = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	monthNames = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

func renderTimestamp(dst []byte, t Type, format int16, canon []byte, s *Session) ([]byte, error) {
	if len(canon) != 8 {
		return dst, corrupt(t, "wrong length")
	}
	if format == BinaryFormat {
		return append(dst, canon...), nil
	}
	style, dmy, err := s.dateStyle(t)
	if err != nil {
		return dst, err
	}
	v := int64(binary.BigEndian.Uint64(canon))
	switch v {
	case tsPosInfinity:
		return append(dst, "infinity"...), nil
	case tsNegInfinity:
		return append(dst, "-infinity"...), nil
	}
	var off int64
	var abbrev string
	if t == Timestamptz {
		off, abbrev = zoneAt(s.location(), v)
	}
	wall := v + off*usPerSec
	days := floorDiv(wall, usPerDay)
	us := wall - days*usPerDay
	jd := int(days) + postgresEpochJDate
	var bc bool
	if style == stylePostgres { // "Tue Jan 02 03:04:05.5 2024 EST" (DMY: "Tue 02 Jan ...")
		y, m, d := j2date(jd)
		bc = y <= 0
		if bc {
			y = 1 - y
		}
		dst = append(dst, dayNames[(jd+1)%7]...)
		dst = append(dst, ' ')
		if dmy {
			dst = appendPadded(dst, d, 2)
			dst = append(dst, ' ')
			dst = append(dst, monthNames[m-1]...)
		} else {
			dst = append(dst, monthNames[m-1]...)
			dst = append(dst, ' ')
			dst = appendPadded(dst, d, 2)
		}
		dst = append(dst, ' ')
		dst = appendClock(dst, us)
		dst = append(dst, ' ')
		dst = appendPadded(dst, y, 4)
	} else {
		dst, bc = appendDateText(dst, jd, style, dmy)
		dst = append(dst, ' ')
		dst = appendClock(dst, us)
	}
	if t == Timestamptz {
		if style == styleISO {
			dst = appendOffset(dst, off)
		} else {
			// The other styles print the zone's abbreviation (EncodeDateTime's tzn).
			dst = append(dst, ' ')
			dst = append(dst, abbrev...)
		}
	}
	if bc {
		dst = append(dst, " BC"...)
	}
	return dst, nil
}

// appendClock appends HH:MM:SS and the fraction without trailing zeros (AppendTimestampSeconds).
func appendClock(dst []byte, us int64) []byte {
	secs := us / usPerSec
	dst = appendPadded(dst, int(secs/3600), 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, int(secs/60%60), 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, int(secs%60), 2)
	if frac := us % usPerSec; frac != 0 {
		var buf [8]byte
		f := appendPadded(buf[:0], int(frac), 6)
		for f[len(f)-1] == '0' {
			f = f[:len(f)-1]
		}
		dst = append(dst, '.')
		dst = append(dst, f...)
	}
	return dst
}

// zoneAt is the offset (seconds east) and abbreviation of loc at the instant us.
func zoneAt(loc *time.Location, us int64) (int64, string) {
	name, off := time.Unix(floorDiv(us, usPerSec)+unixEpochAt2000, 0).In(loc).Zone()
	return int64(off), name
}

// appendOffset is EncodeTimezone: +HH, +HH:MM when minutes are non-zero, +HH:MM:SS when seconds are.
func appendOffset(dst []byte, off int64) []byte {
	sign := byte('+')
	if off < 0 {
		sign, off = '-', -off
	}
	dst = append(dst, sign)
	dst = appendPadded(dst, int(off/3600), 2)
	if off%3600 != 0 {
		dst = append(dst, ':')
		dst = appendPadded(dst, int(off/60%60), 2)
		if off%60 != 0 {
			dst = append(dst, ':')
			dst = appendPadded(dst, int(off%60), 2)
		}
	}
	return dst
}
