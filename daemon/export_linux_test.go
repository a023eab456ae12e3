package daemon

// MaxOpensPerUID is maxOpensPerUID, for the hostile-client tests.
const MaxOpensPerUID = maxOpensPerUID
