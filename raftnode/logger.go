package raftnode

import (
	"go.uber.org/zap"

	"go.etcd.io/raft/v3"
)

// zapRaftLogger adapts zap to raft.Logger. etcd has the same adapter
// (etcdserver.NewRaftLoggerZap) but importing it would link all of etcdserver.
type zapRaftLogger struct {
	sugar *zap.SugaredLogger
}

var _ raft.Logger = (*zapRaftLogger)(nil)

// newRaftLogger skips one caller frame so log lines point into raft, not here.
func newRaftLogger(lg *zap.Logger) raft.Logger {
	return &zapRaftLogger{sugar: lg.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

func (l *zapRaftLogger) Debug(v ...any)                 { l.sugar.Debug(v...) }
func (l *zapRaftLogger) Debugf(format string, v ...any) { l.sugar.Debugf(format, v...) }
func (l *zapRaftLogger) Error(v ...any)                 { l.sugar.Error(v...) }
func (l *zapRaftLogger) Errorf(format string, v ...any) { l.sugar.Errorf(format, v...) }
func (l *zapRaftLogger) Info(v ...any)                  { l.sugar.Info(v...) }
func (l *zapRaftLogger) Infof(format string, v ...any)  { l.sugar.Infof(format, v...) }
func (l *zapRaftLogger) Warning(v ...any)               { l.sugar.Warn(v...) }
func (l *zapRaftLogger) Warningf(format string, v ...any) {
	l.sugar.Warnf(format, v...)
}
func (l *zapRaftLogger) Fatal(v ...any)                 { l.sugar.Fatal(v...) }
func (l *zapRaftLogger) Fatalf(format string, v ...any) { l.sugar.Fatalf(format, v...) }
func (l *zapRaftLogger) Panic(v ...any)                 { l.sugar.Panic(v...) }
func (l *zapRaftLogger) Panicf(format string, v ...any) { l.sugar.Panicf(format, v...) }
