// The bare network `npx hardhat node` serves: chain id 31337, the well-known dev accounts.
module.exports = {
  networks: { hardhat: { chainId: 31337, mining: { auto: true } } },
};
