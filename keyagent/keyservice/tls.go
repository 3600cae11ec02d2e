package keyservice

import (
	"crypto/x509"
	"errors"
	"os"
)

func loadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New(path + ": no PEM certificate in it")
	}
	return pool, nil
}
