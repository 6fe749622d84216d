pub struct ChainServer; pub struct RpcCredentials;
